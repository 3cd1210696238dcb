"""Job callbacks: the final status POSTed to the caller's URL, signed with HMAC-SHA256,
to public addresses only.

`signing` the signature (what receivers verify), `targets` a callback URL taken apart,
`addresses` where callbacks may go (checked at submission and again at delivery),
`delivery` the HTTP client the callback worker runs.
"""

from common.callbacks.addresses import check_callback_url, refusal
from common.callbacks.delivery import MAX_RESPONSE_BYTES, deliver
from common.callbacks.signing import SIGNATURE_HEADER, sign, verify
from common.callbacks.targets import CallbackTarget, parse_target

__all__ = [
    "MAX_RESPONSE_BYTES",
    "SIGNATURE_HEADER",
    "CallbackTarget",
    "check_callback_url",
    "deliver",
    "parse_target",
    "refusal",
    "sign",
    "verify",
]
