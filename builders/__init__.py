"""Dataset builders: the source, the stages (extract, summarize, score, select, decontaminate, dedup), the
pipeline that walks them shard by shard, and the dataset folder writer."""
