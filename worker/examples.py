"""The example workload behind the bundled fixtures: an Orders table and a day of changes.

:func:`run` performs the operations against a real DynamoDB API (the emulator
for the bundled fixtures; any table you own works too). Only operations whose
stream records moto reproduces faithfully are used: PutItem of new items,
UpdateItem of existing items with a real change, DeleteItem.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

TABLE = "Orders"
CITIES = ["Seoul", "Busan", "Lisbon", "Porto", "Osaka"]
SKUS = ["book", "pen", "mug", "lamp", "desk", "chair"]


def create_table(dynamodb: Any, table: str = TABLE) -> None:
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def _order(rng: random.Random, i: int) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [
        {"sku": rng.choice(SKUS), "qty": Decimal(rng.randint(1, 4)), "price": Decimal(rng.randint(100, 9999)) / 100}
        for _ in range(rng.randint(1, 3))
    ]
    total = sum((ln["qty"] * ln["price"] for ln in lines), Decimal(0))
    item: dict[str, Any] = {
        "order_id": f"o-{i:04d}",
        "status": "pending",
        "channel": rng.choice(["web", "web", "mobile"]),
        "total": total,
        "customer": {"id": f"c-{rng.randint(1, 12):03d}", "tier": rng.choice(["gold", "silver", "basic"])},
        "ship": {"city": rng.choice(CITIES), "express": rng.random() < 0.3},
        "lines": lines,
        "tags": {rng.choice(["gift", "promo", "first", "bulk"])},
        "created_at": f"2026-11-22T0{rng.randint(0, 9)}:{rng.randint(10, 59)}:00Z",
        "note": None,
        "receipt": bytes(rng.randrange(256) for _ in range(8)),
    }
    return item


def run(dynamodb_resource: Any, table: str = TABLE, orders: int = 40, seed: int = 7) -> None:
    """Insert ``orders`` orders, then pay, ship, edit, re-tag and cancel some of them."""
    rng = random.Random(seed)
    t = dynamodb_resource.Table(table)
    live: dict[str, dict[str, Any]] = {}
    for i in range(orders):
        item = _order(rng, i)
        t.put_item(Item=item)
        live[item["order_id"]] = item
    ids = sorted(live)
    for oid in rng.sample(ids, k=orders * 3 // 4):
        t.update_item(
            Key={"order_id": oid},
            UpdateExpression="SET #s = :paid, paid_at = :at",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":paid": "paid", ":at": "2026-11-22T12:00:00Z"},
        )
        live[oid]["status"] = "paid"
    paid = [o for o in ids if live[o]["status"] == "paid"]
    for oid in rng.sample(paid, k=len(paid) // 2):
        city = rng.choice([c for c in CITIES if c != live[oid]["ship"]["city"]])
        t.update_item(
            Key={"order_id": oid},
            UpdateExpression="SET #s = :shipped, ship.city = :city",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":shipped": "shipped", ":city": city},
        )
        live[oid]["status"] = "shipped"
    for oid in rng.sample(ids, k=orders // 5):
        t.update_item(
            Key={"order_id": oid},
            UpdateExpression="SET #t = #t + :extra ADD tags :tag",
            ExpressionAttributeNames={"#t": "total"},
            ExpressionAttributeValues={":extra": Decimal("4.99"), ":tag": {"edited"}},
        )
    pending = [o for o in ids if live[o]["status"] == "pending"]
    for oid in pending[: max(1, len(pending) // 2)]:
        t.delete_item(Key={"order_id": oid})
