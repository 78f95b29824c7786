"""Errors of the Prompt Bank.  Each says what is wrong in words a user can act on."""

from __future__ import annotations


class BankError(Exception):
    """Base class: anything the bank refuses to do, or finds broken."""


class ModelMismatchError(BankError):
    """A prompt or job whose base model (or embedding width) does not match the bank's entries."""


class CorruptEntryError(BankError):
    """A stored tensor file is missing, unreadable, or does not match the checksum recorded with it."""


class NoCandidatesError(BankError):
    """The bank holds no prompt that a job of this model and tenant may start from."""


class EntryNotFoundError(BankError, KeyError):
    """No entry with that id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "entry not found"
