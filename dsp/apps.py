from django.apps import AppConfig


class DspConfig(AppConfig):
    name = "dsp"
    verbose_name = "DSP partners"
    default_auto_field = "django.db.models.BigAutoField"
