"""Write the synthetic churn table (lit_dl's embedded default data) to a CSV or Parquet file.

python scripts/make_churn_csv.py customers.csv --rows 5000 --seed 0
"""

from lit_dl.data.churn import main

if __name__ == "__main__":
    main()
