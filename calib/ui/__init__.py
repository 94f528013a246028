"""Rendering helpers: formatting, HTML tables and altair charts for the Streamlit app, plain text for the CLI.

Pure functions from `calib.queries` data (and run results) to display values; no streamlit
import (only `app.py` imports streamlit), no Typer import (text.py returns strings) and no SQL.
"""
