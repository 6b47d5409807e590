# Sourced by tests/run and .ci/run: the Python tools pinned in
# .ci/requirements.txt, in one venv under .tools/ (git-ignored) that is
# reused across runs and reinstalled only when the requirements change.
# Exports DQMON_TEST_PYTHON (the venv's python; its tools are in the same bin/).
# Expects `tools` (the .tools folder) to be set by the caller.
if [ ! -x "$tools/venv/bin/python" ]; then
  python3 -m venv "$tools/venv"
fi
if ! cmp -s .ci/requirements.txt "$tools/venv/.installed" 2>/dev/null; then
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r .ci/requirements.txt
  cp .ci/requirements.txt "$tools/venv/.installed"
fi
export DQMON_TEST_PYTHON="$tools/venv/bin/python"
