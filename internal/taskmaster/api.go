package taskmaster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"
)

// TaskStatuses lists the values of a task's status field.
var TaskStatuses = []string{"backlog", "triage", "todo", "in_progress", "done", "canceled"}

// Field length limits of the resource API, in characters.
const (
	maxTitleLength       = 255
	maxNameLength        = 255
	maxDescriptionLength = 500
)

// maxAPIBodyBytes bounds the request body of a create or update request.
const maxAPIBodyBytes = 1 << 20

// apiHandler is a resource API handler that runs after bearer token
// authentication, with the id of the client that owns the token.
type apiHandler func(w http.ResponseWriter, r *http.Request, clientID string)

func (s *Server) routeAPI() {
	s.mux.Handle("GET /api/tasks", s.authenticated(s.handleListTasks))
	s.mux.Handle("POST /api/tasks", s.authenticated(s.handleCreateTask))
	s.mux.Handle("GET /api/tasks/{task_id}", s.authenticated(s.handleGetTask))
	s.mux.Handle("PUT /api/tasks/{task_id}", s.authenticated(s.handleUpdateTask))
	s.mux.Handle("DELETE /api/tasks/{task_id}", s.authenticated(s.handleDeleteTask))

	s.mux.Handle("GET /api/projects", s.authenticated(s.handleListProjects))
	s.mux.Handle("POST /api/projects", s.authenticated(s.handleCreateProject))
	s.mux.Handle("GET /api/projects/{id}", s.authenticated(s.handleGetProject))
	s.mux.Handle("PUT /api/projects/{id}", s.authenticated(s.handleUpdateProject))
	s.mux.Handle("DELETE /api/projects/{id}", s.authenticated(s.handleDeleteProject))

	// Other paths under /api/ also check the token and are recorded, so a
	// test can see any path that a proxy forwards. They respond with 404.
	s.mux.Handle("/api/", s.authenticated(func(w http.ResponseWriter, r *http.Request, _ string) {
		writeNotFound(w)
	}))
	// Without this pattern a GET of the token endpoint would match "/api/".
	s.mux.HandleFunc("/api/auth/oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, messageResponse{Message: "method not allowed, use POST"})
	})
}

// authenticated wraps next with request counting, recording, the API latency
// and bearer token checks.
func (s *Server) authenticated(next apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.apiRequests.Add(1)
		sw := &statusRecorder{ResponseWriter: w}
		w = sw

		record := APIRequest{
			Time:          s.now(),
			Method:        r.Method,
			Host:          r.Host,
			Path:          r.URL.Path,
			RawPath:       r.URL.RawPath,
			RequestURI:    r.RequestURI,
			Authorization: slices.Clone(r.Header.Values("Authorization")),
		}
		defer func() {
			record.Status = sw.status
			s.recorder.addAPI(record)
		}()

		s.mu.Lock()
		latency := s.apiLatency
		s.mu.Unlock()
		if latency > 0 {
			// The server notices a client that disconnects only after the
			// body is read, so buffer it before the delay.
			body, err := readLimited(r.Body, maxAPIBodyBytes)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, messageResponse{Message: err.Error()})
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			sleepContext(r.Context(), latency)
		}

		clientID, ok := s.authenticateBearer(w, r)
		if !ok {
			return
		}
		next(w, r, clientID)
	})
}

// authenticateBearer checks the bearer token of an API request the way the
// hosted service does, and sends the 401 response when the check fails.
func (s *Server) authenticateBearer(w http.ResponseWriter, r *http.Request) (clientID string, ok bool) {
	// The hosted service reads the header through the Fetch API, which joins
	// repeated lines with ", ", so two Authorization lines fail the format
	// check below.
	authorization := strings.Join(r.Header.Values("Authorization"), ", ")
	if authorization == "" {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeJSON(w, http.StatusUnauthorized, messageResponse{Message: "Authorization header missing"})
		return "", false
	}
	if !strings.HasPrefix(authorization, "Bearer ") || strings.Count(authorization, " ") != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_request"`)
		writeJSON(w, http.StatusUnauthorized, messageResponse{Message: "Invalid Authorization header format"})
		return "", false
	}

	token := strings.TrimPrefix(authorization, "Bearer ")
	clientID, ok = s.validateToken(token)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, messageResponse{Message: "Invalid or expired token"})
		return "", false
	}
	return clientID, true
}

// taskInput contains the fields of a task create or update request. A nil
// field was not given.
type taskInput struct {
	Title       *string
	Description *string
	Status      *string
	ProjectID   *string
}

// projectInput contains the fields of a project create or update request.
type projectInput struct {
	Name        *string
	Description *string
}

// validationError lists the problems found in a request body.
type validationError struct {
	problems []string
}

func (e *validationError) Error() string {
	return "invalid request: " + strings.Join(e.problems, "; ")
}

func (e *validationError) add(format string, args ...any) {
	e.problems = append(e.problems, fmt.Sprintf(format, args...))
}

// validationResponse is the body of a 400 response to an invalid request.
type validationResponse struct {
	Message string   `json:"message"`
	Errors  []string `json:"errors"`
}

// readObject reads the request body as a JSON object. Like the hosted
// service, the caller ignores unknown fields.
func readObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBodyBytes))
	if err != nil {
		return nil, fmt.Errorf("reading request body failed: %w", err)
	}
	var object map[string]json.RawMessage
	if err := json.Unmarshal(body, &object); err != nil || object == nil {
		return nil, errors.New("request body must be a JSON object")
	}
	return object, nil
}

// stringField decodes the named field of object. It returns nil when the
// field is absent and records a problem when it is not a string.
func stringField(object map[string]json.RawMessage, name string, problems *validationError) *string {
	raw, ok := object[name]
	if !ok {
		return nil
	}
	var value string
	if err := json.Unmarshal(raw, &value); err != nil {
		problems.add("%s must be a string", name)
		return nil
	}
	return &value
}

// checkLength records a problem unless value has 1 to maxLength characters.
func checkLength(value *string, name string, maxLength int, problems *validationError) {
	if value == nil {
		return
	}
	n := utf8.RuneCountInString(*value)
	if n < 1 || n > maxLength {
		problems.add("%s must be 1 to %d characters, got %d", name, maxLength, n)
	}
}

// parseTaskInput validates a task body. With requireAll set, as for a create
// request, title, description and project_id must be present.
func parseTaskInput(object map[string]json.RawMessage, requireAll bool) (taskInput, error) {
	problems := &validationError{}
	in := taskInput{
		Title:       stringField(object, "title", problems),
		Description: stringField(object, "description", problems),
		Status:      stringField(object, "status", problems),
		ProjectID:   stringField(object, "project_id", problems),
	}
	if requireAll {
		for name, value := range map[string]*string{"title": in.Title, "description": in.Description, "project_id": in.ProjectID} {
			if value == nil && object[name] == nil {
				problems.add("%s is required", name)
			}
		}
	}
	checkLength(in.Title, "title", maxTitleLength, problems)
	checkLength(in.Description, "description", maxDescriptionLength, problems)
	if in.Status != nil && !slices.Contains(TaskStatuses, *in.Status) {
		problems.add("status %q is invalid, expected one of %s", *in.Status, strings.Join(TaskStatuses, ", "))
	}
	if in.ProjectID != nil && !isUUID(*in.ProjectID) {
		problems.add("project_id %q is not a UUID", *in.ProjectID)
	}
	if len(problems.problems) > 0 {
		slices.Sort(problems.problems)
		return taskInput{}, problems
	}
	return in, nil
}

// parseProjectInput validates a project body. With requireAll set, name and
// description must be present.
func parseProjectInput(object map[string]json.RawMessage, requireAll bool) (projectInput, error) {
	problems := &validationError{}
	in := projectInput{
		Name:        stringField(object, "name", problems),
		Description: stringField(object, "description", problems),
	}
	if requireAll {
		if in.Name == nil && object["name"] == nil {
			problems.add("name is required")
		}
		if in.Description == nil && object["description"] == nil {
			problems.add("description is required")
		}
	}
	checkLength(in.Name, "name", maxNameLength, problems)
	checkLength(in.Description, "description", maxDescriptionLength, problems)
	if len(problems.problems) > 0 {
		slices.Sort(problems.problems)
		return projectInput{}, problems
	}
	return in, nil
}

// isUUID reports whether s has the canonical 8-4-4-4-12 hexadecimal form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// writeBadRequest sends a 400 response for err.
func writeBadRequest(w http.ResponseWriter, err error) {
	var problems *validationError
	if errors.As(err, &problems) {
		writeJSON(w, http.StatusBadRequest, validationResponse{Message: "Validation failed", Errors: problems.problems})
		return
	}
	writeJSON(w, http.StatusBadRequest, messageResponse{Message: err.Error()})
}

// writeNotFound sends the plain-text 404 response of the hosted service.
func writeNotFound(w http.ResponseWriter) {
	http.Error(w, "Not Found", http.StatusNotFound)
}

// pathID returns the named path wildcard, or sends 400 and returns false when
// it is not a UUID.
func pathID(w http.ResponseWriter, r *http.Request, name string) (string, bool) {
	id := r.PathValue(name)
	if !isUUID(id) {
		writeJSON(w, http.StatusBadRequest, messageResponse{Message: fmt.Sprintf("%s %q is not a UUID", name, id)})
		return "", false
	}
	return id, true
}

func (s *Server) handleListTasks(w http.ResponseWriter, r *http.Request, _ string) {
	projectID := r.URL.Query().Get("project_id")
	if projectID != "" && !isUUID(projectID) {
		writeJSON(w, http.StatusBadRequest, messageResponse{Message: fmt.Sprintf("project_id %q is not a UUID", projectID)})
		return
	}
	writeJSON(w, http.StatusOK, s.store.listTasks(projectID))
}

func (s *Server) handleCreateTask(w http.ResponseWriter, r *http.Request, clientID string) {
	object, err := readObject(w, r)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	in, err := parseTaskInput(object, true)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	task, err := s.store.createTask(in, clientID)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, task)
}

func (s *Server) handleGetTask(w http.ResponseWriter, r *http.Request, _ string) {
	id, ok := pathID(w, r, "task_id")
	if !ok {
		return
	}
	task, found := s.store.getTask(id)
	if !found {
		writeNotFound(w)
		return
	}
	writeJSON(w, http.StatusOK, task)
}

func (s *Server) handleUpdateTask(w http.ResponseWriter, r *http.Request, _ string) {
	id, ok := pathID(w, r, "task_id")
	if !ok {
		return
	}
	object, err := readObject(w, r)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	in, err := parseTaskInput(object, false)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	if in == (taskInput{}) {
		writeJSON(w, http.StatusBadRequest, messageResponse{Message: "No fields provided for update"})
		return
	}
	task, found, err := s.store.updateTask(id, in)
	if !found {
		writeNotFound(w)
		return
	}
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	writeJSON(w, http.StatusOK, task)
}

func (s *Server) handleDeleteTask(w http.ResponseWriter, r *http.Request, _ string) {
	id, ok := pathID(w, r, "task_id")
	if !ok {
		return
	}
	if !s.store.deleteTask(id) {
		writeNotFound(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleListProjects(w http.ResponseWriter, _ *http.Request, _ string) {
	writeJSON(w, http.StatusOK, s.store.listProjects())
}

func (s *Server) handleCreateProject(w http.ResponseWriter, r *http.Request, clientID string) {
	object, err := readObject(w, r)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	in, err := parseProjectInput(object, true)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.store.createProject(in, clientID))
}

func (s *Server) handleGetProject(w http.ResponseWriter, r *http.Request, _ string) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	project, found := s.store.getProject(id)
	if !found {
		writeNotFound(w)
		return
	}
	writeJSON(w, http.StatusOK, project)
}

func (s *Server) handleUpdateProject(w http.ResponseWriter, r *http.Request, _ string) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	object, err := readObject(w, r)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	in, err := parseProjectInput(object, false)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	if in == (projectInput{}) {
		writeJSON(w, http.StatusBadRequest, messageResponse{Message: "No fields provided for update"})
		return
	}
	project, found := s.store.updateProject(id, in)
	if !found {
		writeNotFound(w)
		return
	}
	writeJSON(w, http.StatusOK, project)
}

func (s *Server) handleDeleteProject(w http.ResponseWriter, r *http.Request, _ string) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	if !s.store.deleteProject(id) {
		writeNotFound(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
