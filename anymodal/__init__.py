"""anymodal: robust multimodal prediction. The service (`anymodal.service`), training
(`anymodal.training`) and evaluation (`anymodal.evaluation`) live in the repository's top-level
folders of those names."""
