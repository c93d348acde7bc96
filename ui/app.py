"""The servesim dashboard: `servesim ui`, or `streamlit run ui/app.py`.

Streamlit runs this file as a script, so the checkout that holds it is put first on sys.path:
`ui`, `sim`, `policies` and `traces` then all come from the same checkout as this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = str(Path(__file__).resolve().parents[1])
if CHECKOUT not in sys.path:  # Streamlit reruns this script on every interaction
    sys.path.insert(0, CHECKOUT)

import streamlit as st  # noqa: E402

from ui import (controls, page_compare, page_plan, page_roofline, page_sweep,  # noqa: E402
                page_whatif)

PAGES = {
    "What-if": page_whatif.render,
    "A/B compare": page_compare.render,
    "Sweep": page_sweep.render,
    "Plan": page_plan.render,
}
ROOFLINE = "Roofline"

st.set_page_config(page_title="servesim", layout="wide")
st.sidebar.title("servesim")
page = st.sidebar.radio("page", [*PAGES, ROOFLINE], key="page")
st.title(f"servesim: {page}")
if page == ROOFLINE:
    page_roofline.render()
else:
    workload = controls.workload_controls()
    slos, price = controls.slo_and_price_controls()
    PAGES[page](workload, slos, price)
