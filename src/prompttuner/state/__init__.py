"""Persistence of the service: ORM models, the store and its Alembic migrations.

Below ``runtime/`` (the controller saves jobs and events here) and ``api/`` (which reads them); it imports
only ``core``.
"""
