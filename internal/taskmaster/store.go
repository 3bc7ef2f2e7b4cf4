package taskmaster

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Task is a task as the resource API sends it.
type Task struct {
	ID          string    `json:"id"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	Status      string    `json:"status"`
	ProjectID   string    `json:"project_id"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Project is a project as the resource API sends it.
type Project struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Seed data identifiers, fixed so that tests and the quickstart can refer to
// them.
const (
	SeedProjectID = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
	SeedCreatedBy = "seed"
)

// store is the in-memory database of projects and tasks. Its slices keep
// creation order, which is the order of list responses.
type store struct {
	now func() time.Time

	// guards projects and tasks
	mu       sync.Mutex
	projects []Project
	tasks    []Task
}

func newStore(now func() time.Time) *store {
	return &store{now: now}
}

// seed adds one project with three tasks.
func (st *store) seed() {
	now := st.now().UTC()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.projects = append(st.projects, Project{
		ID:          SeedProjectID,
		Name:        "Getting started",
		Description: "Example project created when the server starts.",
		CreatedBy:   SeedCreatedBy,
		CreatedAt:   now,
		UpdatedAt:   now,
	})
	examples := []struct{ title, description, status string }{
		{"Register an OAuth application", "Create a client id and secret for the service account.", "done"},
		{"Start the proxy", "Run the authenticating proxy next to the app.", "in_progress"},
		{"List tasks through the proxy", "Call GET /api/tasks without credentials.", "todo"},
	}
	for _, example := range examples {
		st.tasks = append(st.tasks, Task{
			ID:          newUUID(),
			Title:       example.title,
			Description: example.description,
			Status:      example.status,
			ProjectID:   SeedProjectID,
			CreatedBy:   SeedCreatedBy,
			CreatedAt:   now,
			UpdatedAt:   now,
		})
	}
}

// listTasks returns the tasks, only those of projectID unless it is empty.
func (st *store) listTasks(projectID string) []Task {
	st.mu.Lock()
	defer st.mu.Unlock()
	tasks := make([]Task, 0, len(st.tasks))
	for _, task := range st.tasks {
		if projectID == "" || task.ProjectID == projectID {
			tasks = append(tasks, task)
		}
	}
	return tasks
}

// getTask returns the task with the given id.
func (st *store) getTask(id string) (Task, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	i := st.taskIndexLocked(id)
	if i < 0 {
		return Task{}, false
	}
	return st.tasks[i], true
}

// errProjectNotFound is returned when a task refers to an unknown project.
var errProjectNotFound = errors.New("project_id does not refer to an existing project")

// createTask stores a new task from the validated input.
func (st *store) createTask(in taskInput, createdBy string) (Task, error) {
	now := st.now().UTC()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.projectIndexLocked(*in.ProjectID) < 0 {
		return Task{}, errProjectNotFound
	}
	task := Task{
		ID:          newUUID(),
		Title:       *in.Title,
		Description: *in.Description,
		Status:      "todo",
		ProjectID:   *in.ProjectID,
		CreatedBy:   createdBy,
		CreatedAt:   now,
		UpdatedAt:   now,
	}
	if in.Status != nil {
		task.Status = *in.Status
	}
	st.tasks = append(st.tasks, task)
	return task, nil
}

// updateTask applies the fields set in the validated input. It reports false
// when the task does not exist.
func (st *store) updateTask(id string, in taskInput) (Task, bool, error) {
	now := st.now().UTC()
	st.mu.Lock()
	defer st.mu.Unlock()
	i := st.taskIndexLocked(id)
	if i < 0 {
		return Task{}, false, nil
	}
	if in.ProjectID != nil && st.projectIndexLocked(*in.ProjectID) < 0 {
		return Task{}, true, errProjectNotFound
	}
	task := &st.tasks[i]
	if in.Title != nil {
		task.Title = *in.Title
	}
	if in.Description != nil {
		task.Description = *in.Description
	}
	if in.Status != nil {
		task.Status = *in.Status
	}
	if in.ProjectID != nil {
		task.ProjectID = *in.ProjectID
	}
	task.UpdatedAt = now
	return *task, true, nil
}

// deleteTask removes the task and reports whether it existed.
func (st *store) deleteTask(id string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	i := st.taskIndexLocked(id)
	if i < 0 {
		return false
	}
	st.tasks = slices.Delete(st.tasks, i, i+1)
	return true
}

func (st *store) listProjects() []Project {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.projects)
}

func (st *store) getProject(id string) (Project, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	i := st.projectIndexLocked(id)
	if i < 0 {
		return Project{}, false
	}
	return st.projects[i], true
}

func (st *store) createProject(in projectInput, createdBy string) Project {
	now := st.now().UTC()
	st.mu.Lock()
	defer st.mu.Unlock()
	project := Project{
		ID:          newUUID(),
		Name:        *in.Name,
		Description: *in.Description,
		CreatedBy:   createdBy,
		CreatedAt:   now,
		UpdatedAt:   now,
	}
	st.projects = append(st.projects, project)
	return project
}

func (st *store) updateProject(id string, in projectInput) (Project, bool) {
	now := st.now().UTC()
	st.mu.Lock()
	defer st.mu.Unlock()
	i := st.projectIndexLocked(id)
	if i < 0 {
		return Project{}, false
	}
	project := &st.projects[i]
	if in.Name != nil {
		project.Name = *in.Name
	}
	if in.Description != nil {
		project.Description = *in.Description
	}
	project.UpdatedAt = now
	return *project, true
}

// deleteProject removes the project and its tasks, and reports whether the
// project existed.
func (st *store) deleteProject(id string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	i := st.projectIndexLocked(id)
	if i < 0 {
		return false
	}
	st.projects = slices.Delete(st.projects, i, i+1)
	st.tasks = slices.DeleteFunc(st.tasks, func(task Task) bool { return task.ProjectID == id })
	return true
}

func (st *store) taskIndexLocked(id string) int {
	return slices.IndexFunc(st.tasks, func(task Task) bool { return task.ID == id })
}

func (st *store) projectIndexLocked(id string) int {
	return slices.IndexFunc(st.projects, func(project Project) bool { return project.ID == id })
}

// newUUID returns a random (version 4) UUID in its canonical text form.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
