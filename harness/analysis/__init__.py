"""`spheres analyze`: the pipeline that measures, the checks that judge, the report that renders."""
