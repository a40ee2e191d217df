"""Results: the records of the results file (schema ``vit-audit/1``), how much of them a file keeps, the pictures
embedded in them, and the whole file assembled from a run."""
