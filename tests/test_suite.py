"""The test suite's own machinery: what ``make test`` relies on to finish in its time budget."""

import pytest


@pytest.mark.xdist_group("suite_grouping")
def test_xdist_groups_reach_the_scheduler(request):
    """``make test`` runs pytest-xdist with ``--dist loadgroup``: tests marked with one ``xdist_group`` (those sharing
    an expensive fixture) must run in one worker. pytest 9.2 silently broke that (pytest-dev/pytest-xdist#1386):
    the group never reaches the scheduler, each worker builds the fixture again and the suite runs tens of seconds
    longer. The group is in the test's id exactly when the scheduler can see it."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup (make test does)")
    assert request.node.nodeid.endswith("@suite_grouping"), (
        f"{request.node.nodeid}: xdist_group marks are ignored with this pytest; install the versions in "
        "constraints.txt")
