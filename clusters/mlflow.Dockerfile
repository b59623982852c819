# The MLflow tracking server of clusters/kuberay/mlflow.yaml: the MLflow version pyproject.toml
# allows, its basic-auth app, and the PostgreSQL driver of the SQL backend store.
#
#   docker build -f clusters/mlflow.Dockerfile -t ghcr.io/your-org/bioscale-mlflow:3.17.2 clusters
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg2-binary>=2.9"
USER 1000
EXPOSE 5000
