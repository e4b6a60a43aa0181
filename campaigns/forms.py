"""Readable admin form fields for list-valued targeting: comma-separated text and checkboxes."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from campaigns import targeting
from campaigns.exchanges import token_hash
from campaigns.models import Campaign, Creative, CurrencyRate, Exchange


class ListField(forms.CharField):
    """A list shown as comma-separated text; upper- or lower-cases it as the vocabulary wants."""

    def __init__(self, *, case: str = "", integers: bool = False, **kwargs) -> None:
        self.case = case
        self.integers = integers
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.TextInput(attrs={"size": 80}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(item) for item in value)
        return value

    def to_python(self, value):
        items = [item.strip() for item in (value or "").replace("\n", ",").split(",")]
        items = [getattr(item, self.case)() if self.case else item for item in items if item]
        if self.integers:
            try:
                return [int(item) for item in items]
            except ValueError:
                raise ValidationError("Enter whole numbers separated by commas.",
                                      code="invalid") from None
        return items


class DaypartsField(forms.CharField):
    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.TextInput(attrs={"size": 80}))
        kwargs.setdefault("help_text", "Weekdays and hours in the advertiser's time zone, end "
                                       "hour exclusive: “mon-fri 9-17; sat 10-14”. Empty runs "
                                       "at all hours.")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return targeting.format_dayparts(value) if isinstance(value, dict) else value

    def to_python(self, value):
        return targeting.parse_dayparts(value or "")


def _checkboxes(choices: tuple[str, ...], help_text: str) -> forms.MultipleChoiceField:
    return forms.TypedMultipleChoiceField(
        choices=[(choice, choice.replace("_", " ")) for choice in choices], required=False,
        widget=forms.CheckboxSelectMultiple, help_text=help_text)


class CampaignForm(forms.ModelForm):
    dayparts = DaypartsField()
    countries = ListField(case="upper", help_text="ISO 3166-1 alpha-3 codes: USA, GBR, DEU. "
                                                  "Empty targets every country.")
    regions = ListField(case="upper", help_text="ISO 3166-2 codes: US-CA, GB-ENG.")
    device_types = _checkboxes(targeting.DEVICE_TYPES, "None checked targets every device.")
    operating_systems = _checkboxes(targeting.OPERATING_SYSTEMS,
                                    "None checked targets every operating system.")
    site_domains_allow = ListField(case="lower", help_text="Bid only on these sites.")
    site_domains_block = ListField(case="lower", help_text="Never bid on these sites.")
    app_bundles_allow = ListField(help_text="Bid only in these apps (bundle or store id).")
    app_bundles_block = ListField(help_text="Never bid in these apps.")
    categories = ListField(help_text="IAB content categories: IAB1, IAB2-3.")
    segments = ListField(help_text="User segments from your data.")
    loyalty_tiers = ListField(case="lower", help_text="Tier names of the advertiser's loyalty "
                                                      "program: green, gold, reserve.")
    deal_ids = ListField(help_text="Private marketplace deal ids.")

    class Meta:
        model = Campaign
        fields = ["advertiser", "name", "start_at", "end_at", "dayparts", "currency",
                  "total_budget", "daily_budget", "pacing", "base_bid_cpm", "max_bid_cpm",
                  "frequency_cap_hour", "frequency_cap_day", "frequency_cap_lifetime",
                  *Campaign.TARGETING_FIELDS]


class CreativeForm(forms.ModelForm):
    sizes = ListField(case="lower", help_text="WIDTHxHEIGHT: 300x250, 728x90.")
    categories = ListField(help_text="IAB categories of the ad: IAB1, IAB2-3.")
    attributes = ListField(integers=True, help_text="OpenRTB creative attributes (1-17).")
    mimes = ListField(case="lower", help_text="Video and audio: video/mp4, audio/mpeg.")
    protocols = ListField(integers=True, help_text="Video and audio: OpenRTB protocols, "
                                                   "e.g. 2, 3, 7.")

    click_url = forms.URLField(max_length=2000, required=False, assume_scheme="https",
                               help_text="Where a click lands.")

    class Meta:
        model = Creative
        fields = ["campaign", "name", "format", "sizes", "asset", "markup", "click_url",
                  "adomain", "categories", "attributes", "mimes", "protocols",
                  "duration_seconds"]


class ExchangeForm(forms.ModelForm):
    """The token is write-only: the page never shows it (nor its hash), only whether one is
    set; leaving the field empty keeps the current one."""

    token = forms.CharField(
        required=False, strip=True, min_length=16, max_length=200,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The bearer token this exchange sends (auth: token). Stored only as its "
                  "sha256; leave empty to keep the current one.")
    allowed_networks = ListField(help_text="CIDRs requests may come from (auth: ip): "
                                           "192.0.2.0/24, 2001:db8::/32.")

    class Meta:
        model = Exchange
        fields = ["name", "slug", "seat", "is_default", "is_active", "auth", "token",
                  "allowed_networks", "price_decryption", "price_key_ref", "currency",
                  "no_bid_style"]

    def _post_clean(self) -> None:
        # Model validation checks that token auth has a token: give it the hash to check.
        token = self.cleaned_data.get("token")
        if token:
            self.instance.token_sha256 = token_hash(token)
        super()._post_clean()


class CurrencyRateForm(forms.ModelForm):
    class Meta:
        model = CurrencyRate
        fields = ["currency", "units_per_usd"]

    def clean_currency(self) -> str:
        return self.cleaned_data["currency"].strip().upper()


class NoteForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                           help_text="Say why; the marketer sees this note.")
