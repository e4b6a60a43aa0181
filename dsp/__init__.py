"""DSP partners: OpenRTB fan-out, the auction and partner pacing."""
