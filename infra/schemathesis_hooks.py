"""schemathesis hooks for the portal API run (tests/e2e.rs).

The local Function URL emulator (`cargo lambda watch`) cannot turn every HTTP request into a
Lambda event: a body that is not UTF-8, or a header byte outside ASCII, makes the emulator
itself answer `500 {"type": "https://httpstatuses.com/500", ...}` as text/plain, before the
function runs (AWS base64-encodes such bodies instead). Those failures belong to the emulator,
so exactly they are dropped: the response is the emulator's own 500 *and* the request carried
such bytes. Any other 5xx, and every failure of a request the emulator could pass on, stays.
"""

import schemathesis

EMULATOR_500 = b"https://httpstatuses.com/500"


def _emulator_cannot_carry(request) -> bool:
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    for name, value in request.headers.items():
        raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
        if any(b > 0x7E for b in raw):
            return True
    return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
    emulator = response.status_code == 500 and EMULATOR_500 in (response.content or b"")
    return not (emulator and _emulator_cannot_carry(response.request))
