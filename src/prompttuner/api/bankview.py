"""The API's view of the Prompt Bank, optional: the service runs without it and says why.

Bank entries carry the tenant that added them and whether they are public; a tenant lists its own
entries and the public ones, never another tenant's private prompts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prompttuner.api.models import Job
    from prompttuner.api.service import Service


class BankUnavailable(RuntimeError):
    pass


class BankView:
    def __init__(self, bank: Any) -> None:
        self.bank = bank

    def list_for(self, tenant_id: str) -> list[dict[str, Any]]:
        out = []
        for e in self.bank.entries():
            meta = dict(getattr(e, "meta", {}) or {})
            owner = meta.get("tenant")
            public = bool(meta.get("public", owner is None))
            if public or owner == tenant_id:
                out.append(
                    {
                        "id": getattr(e, "id", None),
                        "task": getattr(e, "task", None),
                        "model": getattr(e, "model", None),
                        "public": public,
                        "mine": owner == tenant_id,
                    }
                )
        return out

    def add_job(self, row: Job, public: bool) -> dict[str, Any]:
        entry = self.bank.add_prompt_file(
            row.prompt_path,
            model=row.model,
            task=row.id,
            meta={"tenant": row.tenant_id, "public": public, "job": row.id},
        )
        return {"id": getattr(entry, "id", str(entry)), "job": row.id, "public": public}


def bank_view(service: Service) -> BankView:
    try:
        from prompttuner.bank import PromptBank  # type: ignore[attr-defined]
    except ImportError as e:
        raise BankUnavailable(f"the Prompt Bank is not available in this build ({e})") from None
    bank_dir = service.controller.cfg.bank_dir
    try:
        bank = PromptBank(bank_dir)
    except Exception as e:  # noqa: BLE001 - any bank failure becomes a clear 501
        raise BankUnavailable(f"the Prompt Bank at {bank_dir} cannot be opened: {e}") from None
    for needed in ("entries", "add_prompt_file"):
        if not hasattr(bank, needed):
            raise BankUnavailable(f"this Prompt Bank has no {needed}(); bank endpoints are disabled")
    return BankView(bank)
