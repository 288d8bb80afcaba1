import sys
from pathlib import Path

# Make the shared helpers (gradcheck.py) importable from every unit test module.
sys.path.insert(0, str(Path(__file__).parent))
