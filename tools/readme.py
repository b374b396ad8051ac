"""README.md from nbs/index.ipynb, the nbdev way (`make readme`; `--check`: exit 1 when they differ, as `make test` does).

Written here, not by `nbdev-readme`: that renders through Quarto, whose installer downloads from GitHub, which these
machines (and many CI runners) cannot reach. nbconvert's Markdown exporter gives the same page from the stored outputs."""
import difflib, re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

REPO = Path(__file__).resolve().parents[1]


def render(nb_path=REPO/'nbs'/'index.ipynb') -> str:
    "The README text of the executed notebook (code fenced as python; nbdev-clean drops the notebook's language)."
    nb = nbformat.read(nb_path, as_version=4)
    nb.metadata['language_info'] = {'name': 'python'}
    text, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    return re.sub(r'<style scoped>.*?</style>\n', '', text, flags=re.S).strip() + '\n'  # pandas' table CSS: GitHub drops it anyway


if __name__ == '__main__':
    text, readme = render(), REPO/'README.md'
    if '--check' not in sys.argv: readme.write_text(text); print(f'wrote {readme}'); sys.exit(0)
    if readme.read_text() == text: print('README.md matches nbs/index.ipynb'); sys.exit(0)
    sys.stdout.writelines(list(difflib.unified_diff(readme.read_text().splitlines(True), text.splitlines(True), 'README.md', 'from nbs/index.ipynb'))[:60])
    print('README.md differs from nbs/index.ipynb: edit the notebook, then `make readme`'); sys.exit(1)
