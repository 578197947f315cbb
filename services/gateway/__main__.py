"""`python -m services.gateway` serves; `python -m services.gateway create-agent ...` adds or
updates an agent (idempotent: an existing e-mail gets the new password and memberships)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from services.gateway.app import create_app
from services.gateway.domain import hash_password
from services.gateway.settings import GatewaySettings
from services.gateway.store import AgentStore
from shared.service import serve
from shared.stores import open_mongo


async def create_agent(settings: GatewaySettings, email: str, password: str, first_name: str | None,
                       chatbots: list[str]) -> str:
    client, db = open_mongo(settings)
    try:
        store = AgentStore(db)
        await store.create_indexes()
        agent = await store.upsert_agent(email, hash_password(password), first_name, chatbots)
        return agent.agent_id
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway")
    sub = parser.add_subparsers(dest="command")
    ca = sub.add_parser("create-agent", help="create or update an agent and their chatbot memberships")
    ca.add_argument("--email", required=True)
    ca.add_argument("--password", required=True)
    ca.add_argument("--first-name", default=None)
    ca.add_argument("--chatbot", action="append", default=[], help="a chatbot id (repeat for several)")
    args = parser.parse_args(argv)
    settings = GatewaySettings()
    if args.command == "create-agent":
        if "@" not in args.email or len(args.password) < 8:
            parser.error("--email must be an e-mail address and --password at least 8 characters")
        agent_id = asyncio.run(create_agent(settings, args.email, args.password, args.first_name, args.chatbot))
        print(f"agent {agent_id} <{args.email}> member of: {', '.join(args.chatbot) or '(none)'}")
        return 0
    serve(create_app, settings, ws_max_size=settings.ws_max_message_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
