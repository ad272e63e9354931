"""Who is calling: an account plus the organizations it can act for."""

from __future__ import annotations

from dataclasses import dataclass

from cogport.db.tables import Account


@dataclass(frozen=True)
class Principal:
    account: Account
    acting_ids: frozenset[int]
    """The caller's own id and the ids of the organizations it belongs to."""

    @property
    def id(self) -> int:
        return self.account.id

    @property
    def is_admin(self) -> bool:
        return self.account.is_admin

    def can_act_for(self, account_id: int) -> bool:
        return account_id in self.acting_ids
