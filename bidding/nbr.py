"""No-bid reasons: the OpenRTB codes we send, and our own finer reasons that map onto them.

`NoBidReason` is the list the spec uses for `BidResponse.nbr` (OpenRTB 3.0 "List: No-Bid
Reason Codes", which 2.6 refers to). `NoBid` is the bidder's own vocabulary: each reason is
what metrics and analytics events record (its value is the label), and `NoBid.X.nbr` is the
code the exchange is told. Several of our reasons share a code because the spec's list has no
word for them ("no campaign matched", "below the floor"); those get 0 Unknown Error rather
than a code that would tell the exchange something untrue. Changing a mapping changes what
exchanges see in their no-bid reports; renaming a value breaks dashboards that count it.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class NoBidReason(IntEnum):
    UNKNOWN_ERROR = 0
    TECHNICAL_ERROR = 1
    INVALID_REQUEST = 2
    KNOWN_WEB_CRAWLER = 3
    SUSPECTED_NON_HUMAN_TRAFFIC = 4
    CLOUD_DATA_CENTER_OR_PROXY_IP = 5
    UNSUPPORTED_DEVICE = 6
    BLOCKED_PUBLISHER_OR_SITE = 7
    UNMATCHED_USER = 8
    DAILY_USER_CAP_MET = 9
    DAILY_DOMAIN_CAP_MET = 10
    ADS_TXT_AUTHORIZATION_UNAVAILABLE = 11
    ADS_TXT_AUTHORIZATION_VIOLATION = 12
    ADS_CERT_AUTHENTICATION_UNAVAILABLE = 13
    ADS_CERT_AUTHENTICATION_VIOLATION = 14
    INSUFFICIENT_AUCTION_TIME = 15
    INCOMPLETE_SUPPLY_CHAIN = 16
    BLOCKED_SUPPLY_CHAIN_NODE = 17


class NoBid(StrEnum):
    """Why the bidder did not bid; `.nbr` is the code sent to the exchange."""

    INVALID_REQUEST = "invalid_request"  # unreadable body, no id or no imp: 400, nbr 2
    TECHNICAL_ERROR = "technical_error"  # our fault: an exception, no snapshot or model
    OVERLOADED = "overloaded"  # the agent queue was full: shed at once, nbr 1 (bidding/agents.py)
    STORE_UNAVAILABLE = "store_unavailable"  # Redis down: capped campaigns fail closed
    INSUFFICIENT_TIME = "insufficient_time"  # the tmax guard
    KNOWN_CRAWLER = "known_crawler"
    SUSPECTED_NON_HUMAN = "suspected_non_human"
    DATA_CENTER_IP = "data_center_ip"
    UNSUPPORTED_DEVICE = "unsupported_device"  # a device or OS no campaign serves
    BLOCKED_PUBLISHER = "blocked_publisher"  # our publisher/site/app blocklist
    UNMATCHED_USER = "unmatched_user"  # a user id is needed and the request has none
    DAILY_USER_CAP = "daily_user_cap"  # frequency caps
    BUDGET_EXHAUSTED = "budget_exhausted"  # budget caps (OPENRTB.md §4.1 maps them to 10)
    ADS_TXT_UNAVAILABLE = "ads_txt_unavailable"
    ADS_TXT_VIOLATION = "ads_txt_violation"
    INCOMPLETE_SUPPLY_CHAIN = "incomplete_supply_chain"
    BLOCKED_SUPPLY_CHAIN_NODE = "blocked_supply_chain_node"
    NO_ELIGIBLE_CAMPAIGN = "no_eligible_campaign"  # nothing matched targeting and blocklists
    NO_CONSENT = "no_consent"  # privacy signals forbid every eligible campaign
    UNSUPPORTED_CURRENCY = "unsupported_currency"  # no currency in `cur` we can bid in
    BELOW_FLOOR = "below_floor"  # every candidate priced under its floor

    @property
    def nbr(self) -> NoBidReason:
        return _NBR[self]


_NBR: dict[NoBid, NoBidReason] = {
    NoBid.INVALID_REQUEST: NoBidReason.INVALID_REQUEST,
    NoBid.TECHNICAL_ERROR: NoBidReason.TECHNICAL_ERROR,
    NoBid.OVERLOADED: NoBidReason.TECHNICAL_ERROR,
    NoBid.STORE_UNAVAILABLE: NoBidReason.TECHNICAL_ERROR,
    NoBid.INSUFFICIENT_TIME: NoBidReason.INSUFFICIENT_AUCTION_TIME,
    NoBid.KNOWN_CRAWLER: NoBidReason.KNOWN_WEB_CRAWLER,
    NoBid.SUSPECTED_NON_HUMAN: NoBidReason.SUSPECTED_NON_HUMAN_TRAFFIC,
    NoBid.DATA_CENTER_IP: NoBidReason.CLOUD_DATA_CENTER_OR_PROXY_IP,
    NoBid.UNSUPPORTED_DEVICE: NoBidReason.UNSUPPORTED_DEVICE,
    NoBid.BLOCKED_PUBLISHER: NoBidReason.BLOCKED_PUBLISHER_OR_SITE,
    NoBid.UNMATCHED_USER: NoBidReason.UNMATCHED_USER,
    NoBid.DAILY_USER_CAP: NoBidReason.DAILY_USER_CAP_MET,
    NoBid.BUDGET_EXHAUSTED: NoBidReason.DAILY_DOMAIN_CAP_MET,
    NoBid.ADS_TXT_UNAVAILABLE: NoBidReason.ADS_TXT_AUTHORIZATION_UNAVAILABLE,
    NoBid.ADS_TXT_VIOLATION: NoBidReason.ADS_TXT_AUTHORIZATION_VIOLATION,
    NoBid.INCOMPLETE_SUPPLY_CHAIN: NoBidReason.INCOMPLETE_SUPPLY_CHAIN,
    NoBid.BLOCKED_SUPPLY_CHAIN_NODE: NoBidReason.BLOCKED_SUPPLY_CHAIN_NODE,
    NoBid.NO_ELIGIBLE_CAMPAIGN: NoBidReason.UNKNOWN_ERROR,
    NoBid.NO_CONSENT: NoBidReason.UNKNOWN_ERROR,
    NoBid.UNSUPPORTED_CURRENCY: NoBidReason.UNKNOWN_ERROR,
    NoBid.BELOW_FLOOR: NoBidReason.UNKNOWN_ERROR,
}
