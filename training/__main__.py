from anymodal.training.cli import app

app(prog_name="python -m anymodal.training")
