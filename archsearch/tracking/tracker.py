"""``SearchTracker``: one search written into MLflow as its trials end, on the driver only.

Trials never talk to MLflow: the search hands the tracker what Tune reports plus the files
of the trial's checkpoint, so workers on other machines need no access to the store. Each
trial is logged once (a resumed search reloads what its parent run already holds), and after
every trial the Pareto tags, the parent run's ``pareto.csv`` and its ``hypervolume`` metric
are brought up to date. Nothing here knows Ray: the search's callback calls ``log_trial``.

A tracking server that goes away is ``outage``'s business: the callback hands each trial's
write to ``outage.submit``, and the end of the search (``finish``) waits for the server the
same way. The parent run names its driver (``driver``), so a second search of the same name
while this one runs is refused, and a parent run left RUNNING by a killed driver is resumable.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Param

from archsearch.constraints import Constraint
from archsearch.hypervolume import front_hypervolume
from archsearch.pareto import OBJECTIVES, format_objectives, front_csv, non_dominated
from archsearch.run_rows import public_row, reference_from_run, row_from_run, trial_row
from archsearch.tracking.child_run import (
    TrialFiles,
    child_params,
    child_tags,
    flatten,
    numeric,
    param_value,
    write_child_run,
)
from archsearch.tracking.driver import (
    DRIVER_TAG,
    driver_state,
    require_no_live_driver,
    running_parents,
    this_driver,
)
from archsearch.tracking.endings import (
    FAILED,
    FINISHED,
    INFEASIBLE,
    INFEASIBLE_TAG,
    STOPPED,
    ending_of_run,
    stopped_summary,
    trial_ending,
)
from archsearch.tracking.front_models import log_front_model
from archsearch.tracking.model_log import warm_up_model_logging
from archsearch.tracking.outage import Outage
from archsearch.tracking.rows import row_values, write_reference
from archsearch.tracking.store import (
    OBJECTIVES_TAG,
    PARENT_TAG,
    PARETO_TAG,
    TRIAL_TAG,
    check_reachable,
    child_runs,
    get_or_create_experiment,
    latest_parent_run,
    open_client,
    resolve_tracking_uri,
    store_errors,
)


class SearchTracker:
    """Logs one search into MLflow as trials end, keeping the Pareto tags, ``pareto.csv``
    and the hypervolume of the parent run current after every trial. Thread-safe: Ray's
    driver calls callbacks from more than one thread."""

    def __init__(
        self,
        experiment: str,
        *,
        tracking_uri: str | None = None,
        objectives: dict[str, str] | None = None,
        search_params: dict[str, Any] | None = None,
        resume: bool = False,
        constraints: Sequence[Constraint] = (),
    ) -> None:
        self.experiment = experiment
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.objectives = dict(objectives or OBJECTIVES)
        #: a finished trial that violates one is logged infeasible, never on the front
        self.constraints = tuple(constraints)
        check_reachable(self.tracking_uri)
        self.outage = Outage(self.tracking_uri)
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = {}  # finished feasible child runs
        self._front: set[str] = set()
        self._unranked: set[str] = set()  # finished runs the front has not been ranked with
        self._logged: set[str] = set()
        self._stale: dict[str, str] = {}  # trial id → child run left RUNNING by a crash
        self._attempted: set[str] = set()  # trial ids whose write was tried in this process
        self._ends: dict[str, str] = {}  # run id → how its trial ended (``endings``)
        self._details: dict[str, dict[str, Any]] = {}  # stopped, infeasible: for summaries
        self._summary_due = False  # a trial logged, its front and parent summary not yet
        self._trial_ids: dict[str, str] = {}  # run id → trial id, for summaries
        self._pending: list[Callable[[bool], None]] = []  # ``finish_waits_for``
        self._model_log_ready = warm_up_model_logging()  # while the trials train
        with store_errors(self.tracking_uri):
            self.client = open_client(self.tracking_uri)
            self.experiment_id = get_or_create_experiment(self.client, experiment)
            self.parent_run_id = self._open_parent(search_params or {}, resume)
            self._load_children()

    # -- the parent run and what it already holds ----------------------------------------

    def _open_parent(self, search_params: dict[str, Any], resume: bool) -> str:
        running = running_parents(self.client, self.experiment_id)
        require_no_live_driver(running, self.experiment, self.tracking_uri)
        parent = latest_parent_run(self.client, self.experiment_id) if resume else None
        if parent is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"search-{datetime.now():%Y%m%d-%H%M%S}",
                tags={
                    PARENT_TAG: "true",
                    DRIVER_TAG: this_driver(),
                    OBJECTIVES_TAG: format_objectives(self.objectives),
                },
            )
            self._refuse_a_twin(run)
            self._log_params(run.info.run_id, search_params, existing={})
            return run.info.run_id
        run_id = parent.info.run_id
        self.client.set_tag(run_id, DRIVER_TAG, this_driver())
        if parent.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        # params are immutable in MLflow: a resumed search adds new keys only
        self._log_params(run_id, search_params, existing=parent.data.params)
        return run_id

    def _log_params(self, run_id: str, params: dict[str, Any], existing: dict[str, str]) -> None:
        flat = flatten(params)
        new = [Param(k, param_value(v)) for k, v in flat.items() if k not in existing]
        if new:
            self.client.log_batch(run_id, params=new)

    def _refuse_a_twin(self, run: Any) -> None:
        """Two searches of one name started at the same moment both found no live driver:
        the later parent run gives way (deleted, one line) to the earlier one."""
        ours = (run.info.start_time, run.info.run_id)
        earlier = [
            r
            for r in running_parents(self.client, self.experiment_id)
            if (r.info.start_time, r.info.run_id) < ours
            and driver_state(r.data.tags.get(DRIVER_TAG)) == "alive"
        ]
        if earlier:
            self.client.delete_run(run.info.run_id)
            require_no_live_driver(earlier, self.experiment, self.tracking_uri)

    def _load_children(self) -> None:
        """What a resumed search already logged: trial ids, finished rows, front membership."""
        for run in child_runs(self.client, self.experiment_id, self.parent_run_id):
            trial_id, ending = run.data.tags.get(TRIAL_TAG), ending_of_run(run)
            if trial_id is None:
                continue
            if ending is None:  # left RUNNING
                self._stale[trial_id] = run.info.run_id
                continue
            self._logged.add(trial_id)
            self._ends[run.info.run_id] = ending
            if ending == FINISHED:
                self._rows[run.info.run_id] = row_from_run(run)
                self._unranked.add(run.info.run_id)
                if run.data.tags.get(PARETO_TAG) == "true":
                    self._front.add(run.info.run_id)

    # -- the dense reference -----------------------------------------------------------------

    def reference(self) -> dict[str, Any] | None:
        """The dense reference on the parent run (a resumed search keeps the one it has)."""
        with self._lock, store_errors(self.tracking_uri):
            return reference_from_run(self.client.get_run(self.parent_run_id))

    def log_reference(
        self, values: dict[str, Any], source: str = "loaded", weights: Path | None = None
    ) -> None:
        """The dense network's figures (``REFERENCE_KEYS``) as ``reference.*`` metrics of the
        parent run, tagged ``loaded`` or ``trained``; a trained one's ``weights`` file too."""
        with self._lock, store_errors(self.tracking_uri):
            write_reference(self.client, self.parent_run_id, values, source, weights)

    def end_pending(self, status: str) -> None:
        """Wait for (a search that ran to its end: ``status`` FINISHED) or stop the work
        ``finish_waits_for`` registered. ``finish`` does it first; a search that shuts Ray
        down before ``finish`` calls it earlier, since that work runs on Ray."""
        while self._pending:
            self._pending.pop(0)(status == "FINISHED")

    def finish_waits_for(self, end: Callable[[bool], None]) -> None:
        """``end(True)`` first thing in a ``finish`` of a search that ran to its end (work its
        summary needs: the dense reference trained beside the trials), ``end(False)`` in any
        other ``finish`` (stop that work)."""
        self._pending.append(end)

    # -- one trial -----------------------------------------------------------------------

    def log_trial(
        self,
        trial_id: str,
        params: dict[str, Any],
        *,
        metrics: dict[str, Any] | None = None,
        trial_dir: Path | None = None,
        error: str | None = None,
        stopped: tuple[int, str] | None = None,
    ) -> str | None:
        """One child run for one trial; None (and nothing logged) when the trial id is already
        in this search. ``trial_dir`` holds the trial's metrics.json, subnetwork.json,
        weights.safetensors and history.json; ``error`` makes the run FAILED; ``stopped``
        (gated epoch, by what) makes it a trial stopped early, ``metrics`` its last epoch
        report (``endings``). A finished trial violating a constraint is logged infeasible."""
        with self._lock:
            if trial_id in self._logged:
                return None
            files = TrialFiles.read(trial_dir)
            metrics = {**files.metrics, **(metrics or {})}
            params = child_params(params, files)
            if trial_id in self._stale:  # half-written (a driver killed, a server gone): redo
                self.client.delete_run(self._stale[trial_id])
                del self._stale[trial_id]
            if trial_id in self._attempted:
                self._delete_orphans(trial_id)
            self._attempted.add(trial_id)
            tags = child_tags(self.parent_run_id, trial_id, params, metrics, files, error)
            ending, more_tags, metrics = trial_ending(
                metrics, error=error, stopped=stopped, constraints=self.constraints
            )
            tags.update(more_tags)
            run_id = write_child_run(
                self.client,
                self.experiment_id,
                (params, metrics, tags),
                files,
                error,
                on_created=lambda created: self._stale.__setitem__(trial_id, created),
            )
            if ending == STOPPED:  # written FINISHED (no error); its tag said stopped all along
                self.client.set_terminated(run_id, "KILLED")
            del self._stale[trial_id]
            self._logged.add(trial_id)
            self._trial_ids[run_id] = trial_id
            self._ends[run_id] = ending
            self._remember(run_id, trial_id, ending, (params, numeric(metrics), tags))
            self._summary_due = True
            self._update_front()
            self._log_parent_summary(hypervolume=ending == FINISHED)
            self._summary_due = False
            return run_id

    def _delete_orphans(self, trial_id: str) -> None:
        """Delete the runs an earlier, failed write of this trial left in the store. A server
        killed after it created the run but before its answer arrived leaves a run whose id
        the search never learned (``_stale`` only knows ids that came back), and writing the
        trial again would log it twice."""
        for run in child_runs(self.client, self.experiment_id, self.parent_run_id):
            if run.data.tags.get(TRIAL_TAG) == trial_id:
                self.client.delete_run(run.info.run_id)

    def _remember(
        self, run_id: str, trial_id: str, ending: str, content: tuple[dict, dict, dict]
    ) -> None:
        """A finished trial's row joins the front's candidates; what the progress line says of
        a stopped or infeasible one is kept aside."""
        params, metrics, tags = content
        if ending in (FINISHED, INFEASIBLE):
            row = trial_row(run_id, trial_id, params, metrics, tags)
            if ending == FINISHED:
                self._rows[run_id] = row
                self._unranked.add(run_id)
            else:
                self._details[run_id] = {**row, "violations": tags[INFEASIBLE_TAG]}
        elif ending == STOPPED:
            self._details[run_id] = stopped_summary(metrics, tags)

    def is_logged(self, trial_id: str) -> bool:
        """Whether this search's store holds the trial (a resumed search's check for ended
        trials that never reached it)."""
        with self._lock:
            return trial_id in self._logged

    def logged_trial_ids(self) -> frozenset[str]:
        """The trials this search's store holds as ended: what a resumed search counts as
        done even where Ray's last saved state does not know them."""
        with self._lock:
            return frozenset(self._logged)

    def summary(self, run_id: str) -> dict[str, Any]:
        """What a progress line needs about a just-logged trial and the search so far."""
        with self._lock:
            row = self._rows.get(run_id) or self._details.get(run_id, {})
            counts = Counter(self._ends.values())
            return {
                **row,
                "run_id": run_id,
                "trial_id": self._trial_ids.get(run_id, row.get("trial_id")),
                "status": self._ends.get(run_id, FAILED).upper(),
                "on_front": run_id in self._front,
                "front_size": len(self._front),
                # ran to their end, feasible or not
                "finished": counts[FINISHED] + counts[INFEASIBLE],
                "infeasible": counts[INFEASIBLE],
                "failed": counts[FAILED],
                "stopped": counts[STOPPED],
                "hypervolume": self.hypervolume(),
            }

    # -- the front -----------------------------------------------------------------------

    def _update_front(self) -> None:
        """The front after more finished trials: the old front plus the trials not yet ranked
        is enough (a trial off the front is beaten by a front member, so it stays off), which
        keeps the cost per trial flat however many trials came before. Retags only runs whose
        membership changed."""
        run_ids = [*self._front, *self._unranked]
        points = [row_values(self._rows[r], self.objectives) for r in run_ids]
        flags = non_dominated(points, list(self.objectives.values()))
        front = {r for r, on in zip(run_ids, flags, strict=True) if on}
        for run_id in front ^ self._front:
            self.client.set_tag(run_id, PARETO_TAG, "true" if run_id in front else "false")
        self._front = front
        self._unranked.clear()

    def hypervolume(self) -> float:
        """The project's yardstick of the front (``archsearch.hypervolume``): the share of the
        box of log10 cost ratios in [-3, 0] and accuracy in [0.1, 1] that the front dominates,
        in as many dimensions as the search has objectives, so searches on different models
        and budgets compare."""
        return front_hypervolume([self._rows[r] for r in self._front], self.objectives)

    def front(self) -> list[dict[str, Any]]:
        """The current front as public rows."""
        with self._lock:
            return self._front_rows()

    def _front_rows(self) -> list[dict[str, Any]]:
        return [public_row(row) for run_id, row in self._rows.items() if run_id in self._front]

    def _log_parent_summary(self, *, hypervolume: bool) -> None:
        """``pareto.csv`` and the hypervolume curve (step = finished trials) of the parent."""
        self.client.log_text(self.parent_run_id, front_csv(self._front_rows()), "pareto.csv")
        if hypervolume and self._rows:
            value = self.hypervolume()
            self.client.log_metric(self.parent_run_id, "hypervolume", value, step=len(self._rows))

    # -- the end -------------------------------------------------------------------------

    def finish(self, *, status: str = "FINISHED", log_front_models: bool = True) -> list[dict]:
        """Log the final front's models in MLflow's PyTorch flavour (seconds each, hence only
        here and only for the front), end the parent run, and return the front rows. Waits
        for a tracking server that is away, up to the outage limit (then ``StoreOutage``),
        except for a FAILED search: its error goes first, and a parent left RUNNING by a
        driver that is gone stays resumable."""
        self.end_pending(status)
        if status == "FAILED":
            if self.outage.gave_up or not self.outage.answering():
                return []
            return self._finish(status, log_front_models)
        self.outage.drain()
        if self.outage.gave_up:
            raise self.outage.error()
        return self.outage.call(lambda: self._finish(status, log_front_models))

    def when_answering(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, waiting out a tracking server that is away like ``finish`` does
        (for the dashboard the search logs last)."""
        return self.outage.call(lambda: fn(*args))

    def _finish(self, status: str, log_front_models: bool) -> list[dict]:
        with self._lock:
            if self._summary_due:
                self._update_front()
                self._log_parent_summary(hypervolume=True)
                self._summary_due = False
            rows = self._front_rows()
            if log_front_models:
                self._model_log_ready.join()
                for row in rows:
                    log_front_model(self.client, row["run_id"])
            self.client.set_terminated(self.parent_run_id, status)
            return rows
