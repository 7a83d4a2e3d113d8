"""Write the synthetic monthly activity sequences (churn_rnn / churn_lstm data) to a long-format CSV.

python scripts/make_activity_csv.py activity.csv --customers 3000 --months 60
"""

from lit_dl.data.activity import main

if __name__ == "__main__":
    main()
