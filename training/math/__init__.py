"""Math word problems: Math23K/Ape210K loading, UniLM fine-tuning of the project's BERT, cached decoding
graphs, the reranker, evaluation."""
