"""Write `.env.example` and the variable table of `docs/configuration.md` from env.VARIABLES.

Run after adding or changing a variable: `python scripts/config_docs.py`. The test suite
fails when the committed files differ from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campaign_express.env import VARIABLES  # noqa: E402

BEGIN, END = "<!-- variables: begin -->", "<!-- variables: end -->"


def env_example() -> str:
    lines = ["# Campaign Express configuration, read from the environment only.",
             "# Copy to .env, edit, and load it into the shell: set -a; . ./.env; set +a",
             "# Every backend URL left empty selects the embedded, in-process default.",
             "# Variables marked [production] must be set when CAMPAIGN_EXPRESS__MODE=production.",
             ""]
    for variable in VARIABLES:
        tag = " [production]" if variable.required_in_production else ""
        lines.append(f"# {variable.meaning.replace('`', '')}{tag}. "
                     f"Default: {variable.default or '(empty)'}")
        literal = not variable.default.startswith("(") and "DATA_DIR" not in variable.default
        lines.append(f"{variable.name}={variable.default if literal else ''}")
        lines.append("")
    return "\n".join(lines)


def table() -> str:
    rows = ["| variable | default | required in production | meaning |", "|---|---|---|---|"]
    for variable in VARIABLES:
        default = variable.default
        shown = f"`{default}`" if default and not default.startswith("(") else default or "(empty)"
        required = "yes" if variable.required_in_production else ""
        rows.append(f"| `{variable.name}` | {shown} | {required} | {variable.meaning} |")
    return "\n".join(rows)


def configuration_doc(current: str) -> str:
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> None:
    (ROOT / ".env.example").write_text(env_example())
    doc = ROOT / "docs" / "configuration.md"
    doc.write_text(configuration_doc(doc.read_text()))


if __name__ == "__main__":
    main()
