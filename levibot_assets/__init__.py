"""LeviBot Assets: nightly AutoML for crypto trading models as a Dagster asset graph."""
