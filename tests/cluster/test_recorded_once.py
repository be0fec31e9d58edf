"""Shared observations are recorded once: every replica watches the same hypervisor, one writes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import db as database
from app.db.schema import audit_log
from tests.cluster.lab import ClusterLab

pytestmark = [pytest.mark.cluster]


async def test_a_hypervisor_coming_up_is_recorded_once_not_once_per_replica(cluster: ClusterLab) -> None:
    db = database.connect_database(cluster.database_url)
    await db.connect()
    try:
        ups = await db.fetch_val(
            sa.select(sa.func.count())
            .select_from(audit_log)
            .where(audit_log.c.action == "hypervisor_up", audit_log.c.target == "h0-cluster")
        )
    finally:
        await db.disconnect()
    # Three replicas connected to h0 (and some were restarted since): it came up once.
    assert ups == 1
