module github.com/authproxy/authproxy/tools/k8sschema

go 1.26.8
