"""Token-id data shared by pretraining and fine-tuning: shards (memory-mapped ids) and samplers."""
