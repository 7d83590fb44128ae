from bert_eval.cli import main

main()
