"""Put the Schemathesis account on the business plan through signed Stripe webhooks, so calls that need
analytics (the usage report) are exercised too. Usage: schemathesis_seed.py BASE_URL WEBHOOK_SECRET ACCOUNT"""
import hashlib
import hmac
import json
import sys
import time
import urllib.request

base, secret, account = sys.argv[1], sys.argv[2], sys.argv[3]
now = int(time.time())
month = 30 * 86400


def send(event):
    body = json.dumps(event).encode()
    t = str(int(time.time()))
    sig = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        base + "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"},
    )
    answer = json.loads(urllib.request.urlopen(req).read())
    if answer.get("status") != "applied":
        sys.exit(f"seeding failed: {answer}")


price = {"id": "price_st", "lookup_key": "business_monthly", "metadata": {}, "recurring": {"interval": "month"}}
item = {"price": price, "current_period_start": now, "current_period_end": now + month}
sub = {"id": "sub_st", "customer": "cus_st", "metadata": {"account_id": account}, "status": "active",
       "billing_cycle_anchor": now, "items": {"data": [item]}}
send({"id": "evt_st_sub", "type": "customer.subscription.created", "created": now, "data": {"object": sub}})
line = {"period": {"start": now, "end": now + month}, "pricing": {"price_details": {"price": "price_st"}}}
invoice = {"id": "in_st", "customer": "cus_st", "billing_reason": "subscription_create",
           "parent": {"subscription_details": {"subscription": "sub_st"}}, "lines": {"data": [line]}}
send({"id": "evt_st_inv", "type": "invoice.paid", "created": now, "data": {"object": invoice}})
