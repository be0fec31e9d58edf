"""What an administrator does to an account beyond its record, for the pages and the admin API alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.broker import people
from app.db.records import UserRecord

if TYPE_CHECKING:
    from app.services import Services


async def set_disabled(services: Services, user_id: int, disabled: bool) -> UserRecord:
    """Disable (its sessions, tokens and consoles end at once) or enable an account.

    :class:`~app.auth.accounts.AccountError` when there is no such account, or it is the last
    enabled administrator."""
    user = await people.set_disabled(services.db, user_id, disabled)
    if disabled:
        await services.broker.revoke_user_consoles(user.id)
    return user
