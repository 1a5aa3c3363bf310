"""The study database: storages, study identity, layer-subset trials, crashed workers.

scotsearch keeps every search in an Optuna study, so the ``optuna`` CLI,
``trials_dataframe()`` and optuna-dashboard read scotsearch studies as they are. Optuna has a
place for all of it, so scotsearch adds no tables of its own to the database:

* the storage (:mod:`~scotsearch.study._storage`): URLs and paths, SQLite in WAL mode with
  the write lock taken at ``BEGIN``, journal files, races between workers creating the same
  file or study;
* the study's ``identity`` (what the scores depend on, checked on every resume) and
  ``environment`` (library versions and device, informational) as study user attrs
  (:mod:`~scotsearch.study._identity`);
* one COMPLETE trial per scored layer subset, and the one rule that ranks them
  (:mod:`~scotsearch.study._trials`);
* heartbeats and the sweep that re-queues the trials of crashed workers on storages without
  Optuna's own heartbeat (:mod:`~scotsearch.study._heartbeat`);
* cooperating beam workers: their registry and their claims on units of a depth, as study
  system attrs (:mod:`~scotsearch.study._team`); one racing beam process's lease
  (:mod:`~scotsearch.study._lease`).
"""

from __future__ import annotations

from scotsearch.study._heartbeat import HEARTBEAT_ATTR
from scotsearch.study._heartbeat import WORKER_ATTR
from scotsearch.study._heartbeat import Heartbeat
from scotsearch.study._heartbeat import fail_dead_workers_trials
from scotsearch.study._heartbeat import mark_worker
from scotsearch.study._heartbeat import needs_own_heartbeat
from scotsearch.study._heartbeat import recover_crashed_trials
from scotsearch.study._heartbeat import sweep_stale_trials
from scotsearch.study._identity import check_identity
from scotsearch.study._identity import environment
from scotsearch.study._identity import evaluator_identity
from scotsearch.study._identity import pairs_digest
from scotsearch.study._identity import plain
from scotsearch.study._lease import LEASE_ATTR
from scotsearch.study._lease import BeamLease
from scotsearch.study._live import study_workers
from scotsearch.study._storage import DEFAULT_STORAGE
from scotsearch.study._storage import STORAGE_ENV
from scotsearch.study._storage import describe_storage
from scotsearch.study._storage import join_study
from scotsearch.study._storage import list_studies
from scotsearch.study._storage import open_shared_storage
from scotsearch.study._storage import open_storage
from scotsearch.study._storage import open_study
from scotsearch.study._storage import resolve_storage
from scotsearch.study._storage import storage_exists
from scotsearch.study._storage import storage_url
from scotsearch.study._team import CLAIM_PREFIX
from scotsearch.study._team import SPLIT_PREFIX
from scotsearch.study._team import TEAM_SIZE_ENV
from scotsearch.study._team import WORKER_PREFIX
from scotsearch.study._team import BeamTeam
from scotsearch.study._team import live_workers
from scotsearch.study._team import unit_state
from scotsearch.study._trials import add_failed_layer_trial
from scotsearch.study._trials import add_layer_trial
from scotsearch.study._trials import best_layers_of
from scotsearch.study._trials import best_trial
from scotsearch.study._trials import completed_trials
from scotsearch.study._trials import layer_distributions
from scotsearch.study._trials import layer_param
from scotsearch.study._trials import layer_params
from scotsearch.study._trials import rank_key


__all__ = [
    "DEFAULT_STORAGE",
    "LEASE_ATTR",
    "WORKER_ATTR",
    "BeamLease",
    "BeamTeam",
    "CLAIM_PREFIX",
    "SPLIT_PREFIX",
    "WORKER_PREFIX",
    "HEARTBEAT_ATTR",
    "STORAGE_ENV",
    "TEAM_SIZE_ENV",
    "Heartbeat",
    "add_failed_layer_trial",
    "add_layer_trial",
    "best_layers_of",
    "best_trial",
    "check_identity",
    "completed_trials",
    "describe_storage",
    "environment",
    "evaluator_identity",
    "fail_dead_workers_trials",
    "join_study",
    "layer_distributions",
    "layer_param",
    "layer_params",
    "list_studies",
    "live_workers",
    "mark_worker",
    "needs_own_heartbeat",
    "open_shared_storage",
    "open_storage",
    "open_study",
    "pairs_digest",
    "plain",
    "rank_key",
    "recover_crashed_trials",
    "resolve_storage",
    "storage_exists",
    "storage_url",
    "study_workers",
    "sweep_stale_trials",
    "unit_state",
]
