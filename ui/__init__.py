"""The servesim what-if dashboard (Streamlit + Altair); `servesim ui` runs `python -m ui`, which
starts `ui/app.py`.

Only `ui/app.py`, `ui/page_*.py`, `ui/controls.py`, `ui/panels.py` and `ui/runner.py` import
streamlit; `ui/data.py`, `ui/charts.py`, `ui/upload.py` and `ui/sweep.py` are plain functions
over the simulator's results, tested without a browser. The dashboard uses the simulator
through `sim.api` and `sim.public` only, and nothing under `sim/` or `policies/` imports this
package, so the simulator's import path stays free of streamlit, altair and pandas.
"""
