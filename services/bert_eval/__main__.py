from bert_eval.cli import app

app()
