#!/usr/bin/env python3
"""A small client for the Tokenbill spend API, standard library only.

    TOKENBILL_URL=http://127.0.0.1:3000 TOKENBILL_KEY=tbk_... python3 spend_client.py 42

Every write gets one Idempotency-Key, reused for all of its retries, so a
retry after a timeout or a 503 is applied at most once. See
docs/token-spending.md and docs/openapi.yaml.
"""
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
import uuid

# 429 and 503 come with Retry-After; 500/502/504 may come from API Gateway
# itself (a crashed or timed-out function). All are safe to retry with the
# same Idempotency-Key.
RETRYABLE = {429, 500, 502, 503, 504}


class SpendError(Exception):
    def __init__(self, status, body):
        self.status = status
        error = body.get("error") or {}
        self.code = error.get("code") or body.get("message", "")
        self.details = error  # e.g. {"available": 3, "requested": 5} for 402
        super().__init__(f"{status} {self.code}: {error.get('message', body)}")


class SpendClient:
    def __init__(self, base_url, key, attempts=5, timeout=10.0):
        self.base_url, self.key = base_url.rstrip("/"), key
        self.attempts, self.timeout = attempts, timeout

    def _call(self, method, path, body=None, write=False, key=None):
        headers = {"Authorization": f"Bearer {self.key}"}
        data = None
        if write:
            data = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
            headers["Idempotency-Key"] = key or str(uuid.uuid4())  # one per operation
        for attempt in range(self.attempts):
            last = attempt == self.attempts - 1
            request = urllib.request.Request(self.base_url + path, data, headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.load(response)
            except urllib.error.HTTPError as err:
                try:
                    answer = json.loads(err.read() or b"{}")
                except ValueError:
                    answer = {}
                if err.code not in RETRYABLE or last:
                    raise SpendError(err.code, answer) from None
                wait = float(err.headers.get("Retry-After") or 0.2 * 2**attempt)
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if last:
                    raise
                wait = 0.2 * 2**attempt  # unknown outcome: the same key settles it
            time.sleep(wait + random.uniform(0, 0.1))

    def balance(self, user_id):
        return self._call("GET", f"/v1/users/{user_id}/balance")

    def transactions(self, user_id, cursor="", limit=20):
        return self._call("GET", f"/v1/users/{user_id}/transactions?limit={limit}&cursor={cursor}")

    # Writes take `key=`: pass one derived from your own request id to make
    # a restarted worker's retry find the first answer; by default a fresh
    # one is drawn per call (and kept for that call's retries).
    def spend(self, user_id, tokens, description=None, metadata=None, key=None):
        body = {"user_id": user_id, "tokens": tokens, "description": description, "metadata": metadata}
        return self._call("POST", "/v1/spend", body, write=True, key=key)

    def hold(self, user_id, tokens, ttl_seconds=600, key=None):
        body = {"user_id": user_id, "tokens": tokens, "ttl_seconds": ttl_seconds}
        return self._call("POST", "/v1/holds", body, write=True, key=key)

    def capture(self, hold_id, tokens, key=None):
        return self._call("POST", f"/v1/holds/{hold_id}/capture", {"tokens": tokens}, write=True, key=key)

    def release(self, hold_id, key=None):
        return self._call("POST", f"/v1/holds/{hold_id}/release", {}, write=True, key=key)

    def refund(self, transaction_id, tokens, reason=None, key=None):
        body = {"transaction_id": transaction_id, "tokens": tokens, "reason": reason}
        return self._call("POST", "/v1/refunds", body, write=True, key=key)

    def metered(self, user_id, max_tokens, run, request_id=None, ttl_seconds=600):
        """Hold the most a call may cost, run it, capture what it used.

        `run()` returns the tokens it used; if it raises, the hold is
        released (and if this process dies, the hold expires on its own).
        """
        request_id = request_id or str(uuid.uuid4())
        hold_id = self.hold(user_id, max_tokens, ttl_seconds, key=f"{request_id}-hold")["hold_id"]
        try:
            used = run()
        except BaseException:
            self.release(hold_id, key=f"{request_id}-release")
            raise
        if used <= 0:
            return self.release(hold_id, key=f"{request_id}-release")
        return self.capture(hold_id, min(used, max_tokens), key=f"{request_id}-capture")


def main():
    client = SpendClient(os.environ.get("TOKENBILL_URL", "http://127.0.0.1:3000"), os.environ["TOKENBILL_KEY"])
    user_id = int(sys.argv[1]) if len(sys.argv) > 1 else 42
    print("balance:", client.balance(user_id))
    try:
        spent = client.spend(user_id, 5, "example spend", {"request": "demo-1"})
        print("spent:", spent)
        print("captured:", client.metered(user_id, 100, lambda: 42))
        print("refunded:", client.refund(spent["transaction_id"], 5, "demo"))
    except SpendError as err:
        if err.code != "insufficient_tokens":
            raise
        print(f"not enough tokens: {err.details.get('available')} available")
    print("latest:", client.transactions(user_id, limit=5)["transactions"])


if __name__ == "__main__":
    main()
