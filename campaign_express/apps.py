from django.apps import AppConfig


class CampaignExpressConfig(AppConfig):
    name = "campaign_express"
    verbose_name = "Campaign Express"
