#!/usr/bin/env python
"""Django's command-line utility for Campaign Express."""

from campaign_express.cli import main

if __name__ == "__main__":
    main()
