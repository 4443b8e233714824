"""Accounts and credentials (users, API tokens) in SQL."""

from __future__ import annotations

from typing import Any

from thinghub.domain.model import Account, ApiToken, Retention, Role, User
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import (
    ACCOUNT_COLUMNS,
    TOKEN_COLUMNS,
    USER_COLUMNS,
    account_params,
    as_account,
    as_token,
    as_user,
    retention_json,
    token_params,
    user_params,
)

__all__ = ["SqlAccountStore", "SqlCredentialStore"]


class SqlAccountStore(SqlArea):
    async def insert(self, account: Account) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?,?,?,?,?)",
                account_params(account),
            ),
            conflict=f"account {account.name!r} already exists",
        )

    async def _one(self, where: str, value: str) -> Account | None:
        row = await self.db.fetch_one(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {where} = ?", (value,)
        )
        return None if row is None else as_account(row)

    async def get(self, account_id: str) -> Account | None:
        return await self._one("id", account_id)

    async def get_by_name(self, name: str) -> Account | None:
        return await self._one("name", name)

    async def get_by_scope(self, id_scope: str) -> Account | None:
        return await self._one("id_scope", id_scope)

    async def all(self) -> list[Account]:
        rows = await self.db.fetch_all(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"
        )
        return [as_account(r) for r in rows]

    async def set_retention(self, account_id: str, retention: Retention) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "UPDATE accounts SET retention = ? WHERE id = ?",
                (retention_json(retention), account_id),
            )
        )
        return bool(count)


class SqlCredentialStore(SqlArea):
    async def insert_user(self, user: User) -> None:
        await self._write(
            Step("exec", f"INSERT INTO users ({USER_COLUMNS}) VALUES (?,?,?,?,?,?)",
                 user_params(user)),
            conflict=f"user {user.username!r} already exists",
        )  # fmt: skip

    async def get_user(self, username: str) -> User | None:
        row = await self.db.fetch_one(
            f"SELECT {USER_COLUMNS} FROM users WHERE username = ?", (username,)
        )
        return None if row is None else as_user(row)

    async def list_users(self, account_id: str) -> list[User]:
        rows = await self.db.fetch_all(
            f"SELECT {USER_COLUMNS} FROM users WHERE account_id = ? ORDER BY username",
            (account_id,),
        )
        return [as_user(r) for r in rows]

    async def delete_user(self, account_id: str, user_id: str) -> bool:
        (count,) = await self._write(
            Step("exec", "DELETE FROM users WHERE account_id = ? AND id = ?", (account_id, user_id))
        )
        return bool(count)

    async def set_user_role(self, account_id: str, user_id: str, role: Role) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "UPDATE users SET role = ? WHERE account_id = ? AND id = ?",
                (role.value, account_id, user_id),
            )
        )
        return bool(count)

    async def insert_token(self, token: ApiToken) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                token_params(token),
            ),
            conflict=f"API token {token.id!r} already exists",
        )

    async def get_token(self, account_id: str, token_id: str) -> ApiToken | None:
        row = await self.db.fetch_one(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE account_id = ? AND id = ?",
            (account_id, token_id),
        )
        return None if row is None else as_token(row)

    async def get_token_by_hash(self, secret_hash: str) -> ApiToken | None:
        row = await self.db.fetch_one(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = ?", (secret_hash,)
        )
        return None if row is None else as_token(row)

    async def list_tokens(self, account_id: str, face: str | None = None) -> list[ApiToken]:
        sql = f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE account_id = ?"
        params: list[Any] = [account_id]
        if face is not None:
            sql += " AND face = ?"
            params.append(face)
        rows = await self.db.fetch_all(sql + " ORDER BY created_at, id", params)
        return [as_token(r) for r in rows]

    async def delete_token(self, account_id: str, token_id: str) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "DELETE FROM api_tokens WHERE account_id = ? AND id = ?",
                (account_id, token_id),
            )
        )
        return bool(count)
