from anymodal.service.cli import app

app(prog_name="python -m anymodal.service")
