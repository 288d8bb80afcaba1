import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gen_settings_doc  # noqa: E402
from gradserve.config import Settings  # noqa: E402


def test_settings_table_matches_the_model():
    text = (ROOT / "docs" / "operations.md").read_text()
    assert gen_settings_doc.render(text) == text, (
        "the settings table of docs/operations.md is out of date: "
        "run python scripts/gen_settings_doc.py"
    )


def test_every_setting_is_in_the_table():
    table = gen_settings_doc.render_table()
    for name in Settings.model_fields:
        assert f"| `--{name.replace('_', '-')}` | `GRADSERVE_{name.upper()}` |" in table
