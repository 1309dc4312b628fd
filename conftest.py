# Doctests import every module of the package; the Triton backend needs the optional triton package.
import importlib.util

collect_ignore = [] if importlib.util.find_spec("triton") else ["src/softhist/_triton_backend.py"]
