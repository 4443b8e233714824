"""Accounts and credentials (users, API tokens) in memory."""

from __future__ import annotations

import dataclasses

from thinghub.domain.model import Account, ApiToken, Retention, Role, User
from thinghub.storage.memory._tables import MemoryArea, unique
from thinghub.storage.sql._rows import (
    account_params,
    as_account,
    as_token,
    as_user,
    retention_json,
    token_params,
    user_params,
)

__all__ = ["MemoryAccountStore", "MemoryCredentialStore"]


class MemoryAccountStore(MemoryArea):
    async def insert(self, account: Account) -> None:
        rows = self.tables.accounts
        unique(
            account.id in rows
            or any(r[1] == account.name or r[2] == account.id_scope for r in rows.values()),
            f"account {account.name!r} already exists",
        )
        rows[account.id] = account_params(account)

    async def get(self, account_id: str) -> Account | None:
        row = self.tables.accounts.get(account_id)
        return None if row is None else as_account(row)

    async def get_by_name(self, name: str) -> Account | None:
        return next((as_account(r) for r in self.tables.accounts.values() if r[1] == name), None)

    async def get_by_scope(self, id_scope: str) -> Account | None:
        rows = self.tables.accounts.values()
        return next((as_account(r) for r in rows if r[2] == id_scope), None)

    async def all(self) -> list[Account]:
        rows = sorted(self.tables.accounts.values(), key=lambda r: (r[3], r[0]))
        return [as_account(r) for r in rows]

    async def set_retention(self, account_id: str, retention: Retention) -> bool:
        row = self.tables.accounts.get(account_id)
        if row is None:
            return False
        self.tables.accounts[account_id] = (*row[:4], retention_json(retention))
        return True


class MemoryCredentialStore(MemoryArea):
    async def insert_user(self, user: User) -> None:
        users = self.tables.users
        unique(
            user.id in users or any(r[2] == user.username for r in users.values()),
            f"user {user.username!r} already exists",
        )
        users[user.id] = user_params(user)

    async def get_user(self, username: str) -> User | None:
        return next((as_user(r) for r in self.tables.users.values() if r[2] == username), None)

    async def list_users(self, account_id: str) -> list[User]:
        rows = [r for r in self.tables.users.values() if r[1] == account_id]
        return [as_user(r) for r in sorted(rows, key=lambda r: r[2])]

    async def delete_user(self, account_id: str, user_id: str) -> bool:
        row = self.tables.users.get(user_id)
        if row is None or row[1] != account_id:
            return False
        del self.tables.users[user_id]
        return True

    async def set_user_role(self, account_id: str, user_id: str, role: Role) -> bool:
        row = self.tables.users.get(user_id)
        if row is None or row[1] != account_id:
            return False
        self.tables.users[user_id] = user_params(dataclasses.replace(as_user(row), role=role))
        return True

    async def insert_token(self, token: ApiToken) -> None:
        tokens = self.tables.tokens
        unique(
            (token.account_id, token.id) in tokens
            or any(r[2] == token.secret_hash for r in tokens.values()),
            f"API token {token.id!r} already exists",
        )
        tokens[(token.account_id, token.id)] = token_params(token)

    async def get_token(self, account_id: str, token_id: str) -> ApiToken | None:
        row = self.tables.tokens.get((account_id, token_id))
        return None if row is None else as_token(row)

    async def get_token_by_hash(self, secret_hash: str) -> ApiToken | None:
        rows = self.tables.tokens.values()
        return next((as_token(r) for r in rows if r[2] == secret_hash), None)

    async def list_tokens(self, account_id: str, face: str | None = None) -> list[ApiToken]:
        rows = [
            r
            for r in self.tables.tokens.values()
            if r[1] == account_id and (face is None or r[5] == face)
        ]
        return [as_token(r) for r in sorted(rows, key=lambda r: (r[7], r[0]))]

    async def delete_token(self, account_id: str, token_id: str) -> bool:
        return self.tables.tokens.pop((account_id, token_id), None) is not None
