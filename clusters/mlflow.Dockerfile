# The MLflow tracking server of clusters/kuberay/mlflow.yaml: the MLflow version pyproject.toml
# allows, its basic-auth app, the PostgreSQL driver of the SQL backend store, and the script that
# creates the non-admin user the Ray pods log in as (Job mlflow-create-user).
#
#   docker build -f clusters/mlflow.Dockerfile -t ghcr.io/your-org/bioscale-mlflow:3.17.2 clusters
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg2-binary>=2.9"
COPY mlflow_user.py /opt/bioscale/mlflow_user.py
USER 1000
EXPOSE 5000
