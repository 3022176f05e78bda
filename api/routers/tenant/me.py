"""Every tenant: who am I, and my API keys (rotate by issuing a new key, then revoking)."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import ConnDep, CurrentCaller
from api.params import Cursor, Limit
from flowbill.paging import DEFAULT_LIMIT, Page
from tenants import service as tenants
from tenants.schemas import ApiKeyCreate, ApiKeyIssued, ApiKeyPublic, TenantPublic

router = APIRouter(prefix="/v1/me", tags=["me"])


@router.get("")
async def whoami(conn: ConnDep, caller: CurrentCaller) -> TenantPublic:
    """The tenant the API key belongs to."""
    return await tenants.get_tenant(conn, caller.tenant_id)


@router.get("/keys")
async def my_keys(
    conn: ConnDep, caller: CurrentCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[ApiKeyPublic]:
    """Your API keys, without their secrets, oldest first."""
    return await tenants.list_keys(conn, caller.tenant_id, limit=limit, cursor=cursor)


@router.post("/keys", status_code=status.HTTP_201_CREATED)
async def issue_my_key(conn: ConnDep, caller: CurrentCaller, body: ApiKeyCreate) -> ApiKeyIssued:
    """Issue another key (for rotation). The secret is shown in this answer only."""
    return await tenants.issue_key(conn, tenant_id=caller.tenant_id, label=body.label)


@router.delete("/keys/{key_id}")
async def revoke_my_key(conn: ConnDep, caller: CurrentCaller, key_id: str) -> ApiKeyPublic:
    """Revoke one of your keys; it stops working at once."""
    return await tenants.revoke_key(conn, tenant_id=caller.tenant_id, key_id=key_id)
