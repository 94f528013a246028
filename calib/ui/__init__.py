"""Rendering helpers for the Streamlit app: formatting, HTML tables and altair charts.

Pure functions from `calib.queries` data to display values; no streamlit
import (only `app.py` imports streamlit) and no SQL.
"""
