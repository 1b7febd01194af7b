"""Links into the MLflow UI (MLflow 3's single-page app): one place that knows its routes.

The UI routes after ``#``; its experiment page reads the runs table's state from the query
string of that route: ``searchFilter`` (the search box, as MLflow's own "runs by user" links
set it), ``orderByKey`` and ``orderByAsc``. A run's page opens one of its artifacts at
``/runs/<id>/artifacts/<path>``, where an HTML file renders in a frame, scripts included.
Verified against the UI that ``mlflow ui`` serves (``tests/test_granularity_fronts.py``).
"""

from __future__ import annotations

import urllib.parse

from archsearch.tracking.store import PARENT_ID_TAG, PARETO_TAG

#: the experiment page's query parameter holding the runs search filter
SEARCH_FILTER_PARAM = "searchFilter"


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table (MLflow 3 opens an experiment on its overview page)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{experiment_url(base, experiment_id)}/{run_id}"


def artifact_url(base: str, experiment_id: str, run_id: str, path: str) -> str:
    """A run's page with one of its artifacts open (``dashboard.html`` renders there)."""
    return f"{run_url(base, experiment_id, run_id)}/artifacts/{urllib.parse.quote(path)}"


def filtered_runs_url(
    base: str, experiment_id: str, filter_string: str, order_by: str | None = None
) -> str:
    """The runs table with ``filter_string`` already in its search box, sorted by the metric
    ``order_by`` (ascending) when given."""
    query = {SEARCH_FILTER_PARAM: filter_string}
    if order_by:
        query.update(orderByKey=f"metrics.`{order_by}`", orderByAsc="true")
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return f"{experiment_url(base, experiment_id)}?{encoded}"


def front_filter(parent_run_id: str) -> str:
    """The runs of one search on its front (a later search of the same name has its own)."""
    return f"tags.{PARETO_TAG} = 'true' AND tags.{PARENT_ID_TAG} = '{parent_run_id}'"


def runs_filter(run_ids: list[str]) -> str:
    """Exactly these runs: a front computed on read, which no tag marks."""
    return "attributes.run_id IN ({})".format(", ".join(f"'{run_id}'" for run_id in run_ids))
