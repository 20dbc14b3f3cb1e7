"""The `unit` mark stays honest: a unit test that asks for a node, or reaches for a socket
or a process on its own, fails, saying so (tests/harness/unit_guard.py)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.unit


@pytest.fixture
def session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytest session of its own with the guard and no other plugin, in a temporary
    directory."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini("[pytest]\naddopts = -p tests.harness.unit_guard\nmarkers = unit: pure\n")
    return pytester


def test_a_unit_test_asking_for_a_node_is_refused_at_collection(
    session: pytest.Pytester,
) -> None:
    session.makeconftest("import pytest\n@pytest.fixture\ndef anvil_cluster():\n    yield None\n")
    session.makepyfile(
        "import pytest\n"
        "@pytest.mark.unit\n"
        "def test_mislabelled(anvil_cluster):\n    pass\n"
        "def test_integration(anvil_cluster):\n    pass\n"
    )
    result = session.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*`unit` tests must be pure*", "*::test_mislabelled: anvil_cluster"]
    )
    assert "test_integration" not in result.stderr.str()


def test_a_unit_test_reaching_for_a_socket_or_process_fails_naming_it(
    session: pytest.Pytester,
) -> None:
    # sys.audit raises the events that connect() and Popen() raise, without doing either.
    session.makepyfile(
        "import sys, pytest\n"
        "@pytest.mark.unit\n"
        "def test_connects():\n"
        "    sys.audit('socket.connect', None, ('127.0.0.1', 8545))\n"
        "@pytest.mark.unit\n"
        "def test_swallows_it():\n"
        "    try:\n"
        "        sys.audit('subprocess.Popen', 'anvil', ['anvil'], None, None)\n"
        "    except Exception:\n"
        "        pass\n"
        "@pytest.mark.unit\n"
        "def test_pure():\n    assert sorted([2, 1]) == [1, 2]\n"
        "def test_integration():\n"
        "    sys.audit('socket.connect', None, ('127.0.0.1', 8545))\n"
    )
    result = session.runpytest()
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_connects _*",
            "E *ImpureUnitTest: a `unit` test must be pure, yet it did socket.connect(*8545))",
            "*_ test_swallows_it _*",
            "a `unit` test must be pure (*), yet it did subprocess.Popen(*): drop its `unit` mark",
        ]
    )
