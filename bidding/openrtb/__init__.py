"""OpenRTB 2.5/2.6 for the bid path: decode a request, normalize it, encode the response.

    request = decode_request(body)      # raises InvalidRequest (answer 400) and nothing else
    view = normalize(request)           # RequestView: 2.5/2.6 reconciled, defaults applied
    body = encode_response(response)    # prices as JSON numbers from Decimal
    body = no_bid_body(view.request_id, NoBid.INSUFFICIENT_TIME.nbr)

Django-free: the bidder imports it.
"""

from bidding.openrtb.request import (
    MAX_BODY_BYTES,
    BidRequest,
    Imp,
    InvalidRequest,
    decode_request,
)
from bidding.openrtb.response import (
    Bid,
    BidResponse,
    InvalidResponse,
    SeatBid,
    decode_response,
    encode_response,
    no_bid_body,
    wire_price,
)
from bidding.openrtb.view import (
    AudioView,
    BannerView,
    DealView,
    ExternalId,
    ImpView,
    NativeView,
    RequestView,
    SupplyChainView,
    VideoView,
    native_request_assets,
    normalize,
)
from bidding.openrtb.vocabulary import os_name

__all__ = [
    "MAX_BODY_BYTES",
    "AudioView",
    "BannerView",
    "Bid",
    "BidRequest",
    "BidResponse",
    "DealView",
    "ExternalId",
    "Imp",
    "ImpView",
    "InvalidRequest",
    "InvalidResponse",
    "NativeView",
    "RequestView",
    "SeatBid",
    "SupplyChainView",
    "VideoView",
    "decode_request",
    "decode_response",
    "encode_response",
    "native_request_assets",
    "no_bid_body",
    "normalize",
    "os_name",
    "wire_price",
]
