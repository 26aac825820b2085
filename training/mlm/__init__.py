"""The project's BERT: masked-LM pretraining, n-gram statistics, Perturbed Masking probes for /segment and
/parse, export and evaluation."""
