# The same environment as environment.yml (conda-forge, with PDAL), with pcpipe installed.
FROM condaforge/miniforge3:latest
WORKDIR /opt/pcpipe
COPY environment.yml .
RUN mamba env create -f environment.yml && mamba clean -afy
COPY . .
RUN conda run -n pcpipe pip install --no-deps -e . \
 && conda run -n pcpipe bash .ci/preview-vendor.sh
ENV PATH=/opt/conda/envs/pcpipe/bin:$PATH
ENTRYPOINT ["pcpipe"]
CMD ["--help"]
