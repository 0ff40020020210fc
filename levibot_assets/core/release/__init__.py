"""Releases, one concern per module (import each name from its module; nothing is re-exported here):

- decision: the champion/challenger rule (decide, evaluate_with_champion, Champion) and the record
  of what it decided (ReleaseDecision, beats, is_score).
- evidence: the families' records over trailing days from the stored predictions, and the paired
  block-bootstrap comparison of the challenger with the champion (what decision rests on).
- store: one release directory on disk: manifest, staging and atomic install, verification and
  loading (verify_release, load_release; hashes from core.integrity), release_id, ReleaseError.
- deploy: what is in service and how it changes: current/<SYMBOL> and best_* links, the history
  journal, summaries, publish, rollback, listing, and the file locks that serialise writers.

decision builds on store, deploy on both; store knows nothing of the rule or of what is served
(its manifest is built from plain values, so nothing here imports in a circle).
"""
