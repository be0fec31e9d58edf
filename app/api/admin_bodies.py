"""The request bodies of the admin API's areas beyond hypervisors and VMs: API tokens, pools,
accounts, directory groups, sessions and settings. Strict, unknown fields refused, as every
JSON body (:mod:`app.api.bodies`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt, StrictStr

from app.api.bodies import Body

Name = Annotated[StrictStr, Field(min_length=1, max_length=64)]


class NewToken(Body):
    """A personal API token to make (its secret is in the answer, once)."""

    name: Name
    read_only: StrictBool = False
    # Days until it expires; absent or null: it does not expire.
    expires_in_days: Annotated[StrictInt, Field(ge=1, le=3650)] | None = None
